"""The GraphQL API at `/graphql`: search, documents and their similar ones, collections, jobs and
batches, over the same use cases, authentication and tenants as the REST API (docs/graphql.md).

`schema.py` (queries and mutations) · `types.py` (the types and their linked fields) · `context.py` (what
a request's resolvers share) · `errors.py` (domain errors -> `extensions.code`) · `limits.py` (depth,
cost, tokens, body) · `endpoint.py` (the route). `python -m inferline.api.graphql` prints the schema.
"""
