"""The app's windows and panels; each module holds one of them."""
