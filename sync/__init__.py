"""Field Service bookings -> Outlook calendars: the sync library behind function_app.py."""
