"""The Azure Functions shell: triggers, orchestrators, activities, client wiring, webhook, settings, telemetry."""
