# Pin map of a Raspberry Pi Pico (RP2040) on the cityedge carrier board.
from micropython import const

I2C_ID = const(0)
I2C_SCL = const(5)
I2C_SDA = const(4)
I2C_FREQ = const(400_000)

ADDR_BH1750 = const(0x23)
ADDR_INA219 = const(0x40)
ADDR_MAX30102 = const(0x57)
ADDR_MAX30205 = const(0x48)

PIN_LAMP_PWM = const(15)
PIN_LAMP_RELAY = const(14)
PIN_PIR = const(16)
PIN_STATUS_LED = const(25)
PIN_BUZZER = const(18)
PIN_BATTERY_ADC = const(26)

LINK_UART_ID = const(0)
LINK_TX = const(0)
LINK_RX = const(1)
LINK_BAUD = const(115200)

BATTERY_DIVIDER = const(3)
