"""Azure Functions app (Python v2 programming model): registers the sync blueprint. No logic here."""
import azure.functions as func

from sync.app.functions import bp, environment_ok
from sync.app.gc_tuning import tune_collector
from sync.app.telemetry import configure_telemetry, quiet_library_loggers

# E4: a missing or malformed setting stops the app at start with a message naming it.
environment_ok()
quiet_library_loggers()            # before any client logs a request URL
configure_telemetry()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)
tune_collector()                  # last: everything the app imports at start is loaded now
