"""Use-cases of the CSMS. Services see storage and the outside world only through
Protocols; they never import ocpp, websockets or SQLAlchemy."""
