"""Views: what every face shows of a result, computed once.

``tables`` turns results into formatted ``Table``s, ``plots`` into matplotlib figures with
one colour convention, ``arithmetic`` a cell's arithmetic into renderer-neutral steps. The
CLI prints them with Rich, the report lays them out as HTML, the server sends them as JSON.
"""
