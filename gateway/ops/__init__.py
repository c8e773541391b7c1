"""Operations-center side of the uplink: the reference consumer and ``cityedge ops``."""
