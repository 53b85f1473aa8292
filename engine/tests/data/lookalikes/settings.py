import os

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DATABASES = {
    "default": {
        "PASSWORD": os.getenv("DB_PASSWORD", ""),
        "USER": "app",
    }
}
API_TOKEN = settings.API_TOKEN
password_min_length = 12
auth_token_header = "X-Auth-Token"
token = request.headers.get("Authorization")
client_secret = config["oauth"]["client_secret"]
access_key = get_access_key()
