"""Series assembly: indexing spooled instances, identity (scanner, protocol) and completion by quiet period."""
