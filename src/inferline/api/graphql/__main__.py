"""`python -m inferline.api.graphql > docs/graphql.schema.graphql`: the schema in the GraphQL schema
language."""

from inferline.api.graphql.schema import sdl

print(sdl(), end="")
