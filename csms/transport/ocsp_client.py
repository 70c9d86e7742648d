"""Asking a remote OCSP responder (RFC 6960 A.1, POST): bounded in time and size, no
redirects followed (a redirect could lead past the allow-list)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from csms.services.certificate_status import OcspFetchError

TIMEOUT_S = 5.0
MAX_RESPONSE_BYTES = 64 * 1024


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: object, **__: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class HttpOcspFetcher:
    async def fetch(self, url: str, request_der: bytes) -> bytes:
        try:  # the whole exchange, not each socket operation
            return await asyncio.wait_for(asyncio.to_thread(self._fetch, url, request_der),
                                          TIMEOUT_S)  # fmt: skip
        except TimeoutError:
            raise OcspFetchError(f"no answer within {TIMEOUT_S:g} s") from None

    @staticmethod
    def _fetch(url: str, request_der: bytes) -> bytes:
        request = urllib.request.Request(  # noqa: S310 -- the caller allowed this URL
            url, data=request_der, headers={"Content-Type": "application/ocsp-request"}
        )
        try:
            with _OPENER.open(request, timeout=TIMEOUT_S) as response:
                body: bytes = response.read(MAX_RESPONSE_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise OcspFetchError(str(exc)) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise OcspFetchError(f"response over {MAX_RESPONSE_BYTES} bytes")
        return body
