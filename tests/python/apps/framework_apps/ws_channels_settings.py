"""Django settings for the Channels app (framework_apps/ws_channels.py):
no database, the in-memory channel layer."""

SECRET_KEY = "oneloop-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = "framework_apps.ws_channels"
ASGI_APPLICATION = "framework_apps.ws_channels.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DATABASES = {}
USE_TZ = True
LOGGING_CONFIG = None
