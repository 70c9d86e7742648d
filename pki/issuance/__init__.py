"""The issuance pipeline: an ordered sequence of small named checks, then sign.

Order (DESIGN.md, issue #2): PEM/size -> proof of possession -> key policy -> no CA
request -> subject bound to the registered identity -> profile extensions only ->
serial -> validity -> sign -> ISO 15118 lint. Recording is the caller's job
(`pki.authority`), in one transaction with its audit entry.
"""
