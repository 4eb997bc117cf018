"""What one GraphQL request may ask for, checked on the document before anything runs.

- **Tokens**: the parser stops past `max_tokens` (a `GRAPHQL_PARSE_FAILED`); the body is bounded before it
  (`endpoint.py`).
- **Shape** (`QUERY_TOO_COMPLEX`, `DocumentShape`, before validation): at most `max_selections` fields
  and fragments written in the document and `max_fragments` fragment definitions; then, in each selection
  set as validation merges it (fragments expanded, the sub-selections of fields of one response name
  pooled: `_MergedShape`), at most `max_same_name` fields of one response name with sub-selections,
  `max_same_leaf` without, and `max_expanded` selections in all. Tokens alone do not bound validation:
  graphql-core's rule that fields of one name can merge compares them pairwise, and
  `{ document(…) { job { id } job { id } … } }` 480 times (5 kB, under 2,000 tokens) took 1.0 s of the
  event loop to validate (200 times: 0.34 s), whatever the other rules then refused; the same through 14
  fragments spread in one set, 0.06-0.15 s.
- **Depth**: fields nested more than `max_depth` deep (`QUERY_TOO_DEEP`). The schema has a cycle (a hit's
  document, its similar documents, their hits' documents, ...); nothing useful is deeper than 8.
- **Cost** (`QUERY_TOO_COMPLEX`): every field that has fields of its own costs 1 (a field of `Query` or
  `Mutation`: 10, each being a use case's own reads), and a field with a `limit` argument multiplies
  what is under it by that limit (the cap, 100, when it is a variable; the argument's default when
  absent). The fields below the root that run a use case of their own (`similar`: an index search;
  `job`: a read) cost 10 too. Aliases and repeated fields each count. A search of 100 hits with their
  documents costs 210; a search of 10 hits, each with its document's 10 similar ones: 230.
- **Fields at the root**: at most `max_root_fields` (10) queries or mutations in one operation, fragments
  included (`QUERY_TOO_COMPLEX`): strawberry runs them at once, each with its own database connection or
  index search, so one request of a hundred cheap ones would take the pool other tenants' requests need.

Introspection (`__schema`, `__type`) is left to graphql-core's own rule, which bounds its nesting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    ExecutableDefinitionNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    get_named_type,
)
from graphql.language import InlineFragmentNode
from strawberry.extensions import SchemaExtension

TOO_DEEP = "QUERY_TOO_DEEP"
TOO_COMPLEX = "QUERY_TOO_COMPLEX"
MAX_LIMIT = 100  # of every `limit` argument, as in the REST API
ROOT_FIELD_COST = 10  # a query or mutation: a use case's transaction (or an index search) each
IO_FIELDS = frozenset({"similar", "job"})  # below the root, each a use case of its own: costed as one


@dataclass(frozen=True)
class QueryLimits:
    max_depth: int = 8
    max_cost: int = 1000
    max_root_fields: int = 10
    max_tokens: int = 2000
    max_body_bytes: int = 64 * 1024
    max_selections: int = 300
    max_fragments: int = 30
    max_same_name: int = 10
    max_same_leaf: int = 50
    max_expanded: int = 5000


@dataclass(frozen=True)
class Measure:
    depth: int
    cost: int


class DocumentShape(SchemaExtension):
    """Refuses a document over `limits`' shape before graphql-core validates it (the validation then
    does not run): one walk of the document, linear in its size."""

    def __init__(self, limits: QueryLimits) -> None:
        self.limits = limits

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None and (problem := shape_problem(context.graphql_document, self.limits)):
            context.pre_execution_errors = [GraphQLError(problem, extensions={"code": TOO_COMPLEX})]
        yield


def shape_problem(document: DocumentNode, limits: QueryLimits) -> str | None:
    """Why the document's shape is over `limits`, or None."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    if len(fragments) > limits.max_fragments:
        return f"the document defines {len(fragments)} fragments; the limit is {limits.max_fragments}"
    starts = [d.selection_set for d in document.definitions if isinstance(d, ExecutableDefinitionNode)]
    if _written_selections(starts) > limits.max_selections:
        return f"the document selects over {limits.max_selections} fields and fragments; that is the limit"
    return _MergedShape(fragments, limits).problem(starts)


def _written_selections(starts: list[SelectionSetNode]) -> int:
    """The fields, inline fragments and spreads written in the document (fragments not expanded)."""
    count, pending = 0, list(starts)
    while pending:
        for selection in pending.pop().selections:
            count += 1
            inner = getattr(selection, "selection_set", None)
            if inner is not None:
                pending.append(inner)
    return count


class _MergedShape:
    """The document's fields as graphql-core's rule that fields of one name can merge sees them: a
    selection set with its inline fragments and fragment spreads expanded into it (each fragment once, as
    that rule collects them), and the sub-selections of its fields of one response name merged into one
    set (`{ a { x } a { x } }` compares two `x`). The rule compares the fields of one name in such a set
    pairwise: at most `max_same_name` of one name with sub-selections and `max_same_leaf` without (an
    unaliased `__typename` free once per written set: clients add one to every fragment), and at most
    `max_expanded` selections visited in all, which also bounds fragments spread through one another."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode], limits: QueryLimits) -> None:
        self.fragments = fragments
        self.limits = limits
        self.visited = 0

    def problem(self, starts: list[SelectionSetNode]) -> str | None:
        groups = [[start] for start in starts]  # each operation and fragment definition, as validated alone
        while groups:
            merged: dict[str, list[SelectionSetNode]] = {}
            counts: Counter[str] = Counter()
            leaves: Counter[str] = Counter()
            typenamed: set[int] = set()  # the written sets whose free `__typename` is taken
            for written_in, field in self._fields(groups.pop()):
                if field is None:
                    return f"the document's fragments expand to over {self.limits.max_expanded} selections"
                name = (field.alias or field.name).value
                if field.selection_set is not None:
                    counts[name] += 1
                    merged.setdefault(name, []).append(field.selection_set)
                elif name == "__typename" and written_in not in typenamed:
                    typenamed.add(written_in)
                else:
                    leaves[name] += 1
            problem = _too_many(counts, self.limits.max_same_name) or _too_many(leaves, self.limits.max_same_leaf)
            if problem:
                return problem
            groups.extend(merged.values())
        return None

    def _fields(self, group: list[SelectionSetNode]) -> Iterator[tuple[int, FieldNode | None]]:
        """The fields of merged selection sets, each with the identity of the set it is written in;
        fragments expanded once each (which also cuts a cycle: the validation refuses it); None once past
        the budget."""
        pending = list(group)
        expanded: set[str] = set()
        while pending:
            selection_set = pending.pop()
            for selection in selection_set.selections:
                self.visited += 1
                if self.visited > self.limits.max_expanded:
                    yield id(selection_set), None
                    return
                if isinstance(selection, FieldNode):
                    yield id(selection_set), selection
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                else:
                    assert isinstance(selection, FragmentSpreadNode)
                    name = selection.name.value
                    fragment = self.fragments.get(name)
                    if fragment is not None and name not in expanded:
                        expanded.add(name)
                        pending.append(fragment.selection_set)


def _too_many(counts: Counter[str], limit: int) -> str | None:
    if counts and (most := counts.most_common(1)[0])[1] > limit:
        name, count = most
        return f"the document asks for {name} {count} times in one place; the limit is {limit}"
    return None


def limits_rule(limits: QueryLimits) -> type[ValidationRule]:
    """A validation rule that refuses an operation over `limits`' depth or cost, with its code."""

    class QueryLimitsRule(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
            root = self.context.schema.get_root_type(node.operation)
            measure = Measurer(self.context).selections(node.selection_set, root)
            if measure.depth > limits.max_depth:
                message = f"the query is {measure.depth} fields deep; the limit is {limits.max_depth}"
                self.report_error(GraphQLError(message, node, extensions={"code": TOO_DEEP}))
            if measure.cost > limits.max_cost:
                message = (
                    f"the query costs {measure.cost} (every field with fields of its own is 1, a query or "
                    f"mutation 10, times the `limit` of the fields above it); the limit is {limits.max_cost}"
                )
                self.report_error(GraphQLError(message, node, extensions={"code": TOO_COMPLEX}))
            elif (count := Measurer(self.context).root_fields(node.selection_set)) > limits.max_root_fields:
                message = f"the operation asks {count} fields at its root; the limit is {limits.max_root_fields}"
                self.report_error(GraphQLError(message, node, extensions={"code": TOO_COMPLEX}))

    return QueryLimitsRule


class Measurer:
    """The depth and cost of an operation's selections, fragments expanded, each fragment measured once
    (a fragment spread a thousand times costs one walk, not a thousand)."""

    def __init__(self, context: ValidationContext) -> None:
        self.context = context
        self.fragments: dict[str, Measure] = {}
        self.root_counts: dict[str, int] = {}
        schema = context.schema
        self.roots = [root for root in (schema.query_type, schema.mutation_type) if root is not None]

    def selections(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> Measure:
        depth, cost = 0, 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                inner = self.field(selection, parent)
            elif isinstance(selection, FragmentSpreadNode):
                inner = self.fragment(selection.name.value)
            else:
                assert isinstance(selection, InlineFragmentNode)
                inner = self.selections(selection.selection_set, self.condition(selection, parent))
            depth, cost = max(depth, inner.depth), cost + inner.cost
        return Measure(depth, cost)

    def field(self, node: FieldNode, parent: GraphQLNamedType | None) -> Measure:
        if node.name.value.startswith("__"):
            return Measure(0, 0)
        if node.selection_set is None:
            return Measure(1, 0)
        definition = parent.fields.get(node.name.value) if isinstance(parent, _WITH_FIELDS) else None
        inner_type = get_named_type(definition.type) if definition is not None else None
        inner = self.selections(node.selection_set, inner_type)
        runs_a_use_case = (parent is not None and parent in self.roots) or node.name.value in IO_FIELDS
        own = ROOT_FIELD_COST if runs_a_use_case else 1
        return Measure(1 + inner.depth, own + limit_of(node, definition) * inner.cost)

    def root_fields(self, selection_set: SelectionSetNode, seen: frozenset[str] = frozenset()) -> int:
        """The fields an operation runs at its root, through its fragments (each spread counts; each
        fragment is counted once, however often spread; a cycle stops: the validation reports it)."""
        count = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                count += not selection.name.value.startswith("__")
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in self.root_counts:
                    fragment = self.context.get_fragment(name)
                    inside = 0
                    if fragment is not None and name not in seen:
                        inside = self.root_fields(fragment.selection_set, seen | {name})
                    self.root_counts[name] = inside
                count += self.root_counts[name]
            else:
                assert isinstance(selection, InlineFragmentNode)
                count += self.root_fields(selection.selection_set, seen)
        return count

    def fragment(self, name: str) -> Measure:
        if name not in self.fragments:
            self.fragments[name] = Measure(0, 0)  # a cycle (refused by another rule) ends here
            definition = self.context.get_fragment(name)
            if definition is not None:
                on = self.context.schema.get_type(definition.type_condition.name.value)
                self.fragments[name] = self.selections(definition.selection_set, on)
        return self.fragments[name]

    def condition(self, node: InlineFragmentNode, parent: GraphQLNamedType | None) -> GraphQLNamedType | None:
        if node.type_condition is None:
            return parent
        return self.context.schema.get_type(node.type_condition.name.value)


_WITH_FIELDS = (GraphQLObjectType, GraphQLInterfaceType)


def limit_of(node: FieldNode, definition: GraphQLField | None) -> int:
    """The `limit` a field asks for, as far as the document says: its literal value, the cap for a
    variable, the argument's default when absent; 1 for a field without a `limit`."""
    argument = next((arg for arg in node.arguments or () if arg.name.value == "limit"), None)
    if argument is None:
        declared = definition.args.get("limit") if definition is not None else None
        default = declared.default_value if declared is not None else None
        return default if isinstance(default, int) and 1 <= default <= MAX_LIMIT else 1
    if isinstance(argument.value, IntValueNode) and len(argument.value.value) <= 4:
        return max(1, min(int(argument.value.value), MAX_LIMIT))
    return MAX_LIMIT  # a variable (or not an int, which another rule refuses)
