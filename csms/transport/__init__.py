"""How stations reach the CSMS: TLS contexts and (next) the websocket endpoint. Thin:
facts are gathered here and decisions are taken in `csms.domain`."""
