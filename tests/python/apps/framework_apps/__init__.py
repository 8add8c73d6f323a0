"""Real framework apps served by oneloop in the framework tests."""
