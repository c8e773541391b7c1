# Pin map of the reference node: an ESP32 DevKitC on the cityedge carrier board.
# The emulated board wires its peripheral models to the same pins and addresses.
from micropython import const

I2C_ID = const(0)
I2C_SCL = const(22)
I2C_SDA = const(21)
I2C_FREQ = const(400_000)

# I2C addresses (7-bit)
ADDR_BH1750 = const(0x23)  # ambient light (ADDR pin low)
ADDR_INA219 = const(0x40)  # lamp energy meter
ADDR_MAX30102 = const(0x57)  # PPG pulse-oximeter
ADDR_MAX30205 = const(0x48)  # body thermometer

PIN_LAMP_PWM = const(25)  # LED driver dimming input (PWM, or 0-10 V through the carrier's filter)
PIN_LAMP_RELAY = const(26)  # driver mains relay
PIN_PIR = const(27)  # motion sensor output, active high
PIN_STATUS_LED = const(2)
PIN_BUZZER = const(4)  # piezo, driven by PWM
PIN_BATTERY_ADC = const(35)  # battery through a 1:2 divider

LINK_UART_ID = const(1)  # to the RS-485 transceiver / LoRa UART modem
LINK_TX = const(17)
LINK_RX = const(16)
LINK_BAUD = const(115200)

BATTERY_DIVIDER = const(2)
