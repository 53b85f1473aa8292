"""Django settings for myproject."""
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "!z8bl82^7m3ncve09ouiydp)r7=qr2@@xx7601fb(*_^tepxn!"
DEBUG = False
ALLOWED_HOSTS = ["shop.example.com"]

STRIPE_SECRET_KEY = "sk_live_nDFeWqfWHHLE5XGCtA18dVUh"
STRIPE_WEBHOOK_TOLERANCE = 300

SLACK_BOT_TOKEN = "xoxb-582724627820-7018999193021-VfaWJ2r1DrIbQ6sqoPOK6iSu"
SLACK_CHANNEL = "#orders"
