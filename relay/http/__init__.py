"""HTTP handlers: parse with pydantic, call a domain service, shape the answer."""
