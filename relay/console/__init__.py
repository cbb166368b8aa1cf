"""The console: a browser UI served by the relay at /console (api role).

Sessions (sessions.py) turn an API key into an HttpOnly cookie; the routes (routes.py)
serve the static page and a few JSON summaries; the page itself (static/) renders the
/v1 JSON with DOM calls only, so whatever the API lets a key see is what the console shows.
"""
