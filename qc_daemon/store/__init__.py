"""Persistence: the schema, the engine, migrations and the queries the roles share."""
