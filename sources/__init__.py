"""Real sources between the outside world and the raw topic: RSS/Atom, SEC EDGAR, JSON
polling (`finsentry sources run`) and HTTP push (`POST /v1/items`)."""
