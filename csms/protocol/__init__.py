"""OCPP 2.0.1 messages: one small handler per action that extracts fields, calls one
service method and maps the result. No SQL, crypto or policy here."""
