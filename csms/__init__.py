"""The OCPP 2.0.1 service of pkictl. `csms.app` is the one composition root."""
