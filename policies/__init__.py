"""Shipped issuance policies: TOML data, parsed only by `pki.policy`. Installed as the
`pkictl_policies` package so `pkictl init` finds the default policy in any install."""
