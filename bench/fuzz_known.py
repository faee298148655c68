"""schemathesis hooks for `bench/fuzz.py --known` (SCHEMATHESIS_HOOKS): a request body generated to
fit the schema names the seeded project, agents, thread, message, attachment, build slot and
product wherever it names one, so the write tools reach their real work too. (A body generated
to violate the schema is left as it is: the mapping could mend it.)"""

import json
import os

import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode

KNOWN = json.loads(os.environ["FUZZ_KNOWN"])  # bench/fuzz.py seed(): field -> value
# Tools that would take the seeded things away from the rest of the run (archived, retired,
# unlinked, closed to mail, released): their bodies stay as generated.
SPARED = {"archive_project", "retire_agent", "products_unlink", "set_contact_policy", "set_retention_policy",
          "release_build_slot", "release_file_reservations", "force_release_file_reservation"}


@schemathesis.hook
def map_case(context, case):
    body = case._meta.components.get(ParameterLocation.BODY) if case._meta else None
    spared = context.operation is not None and context.operation.path.rsplit("/", 1)[-1] in SPARED
    if isinstance(case.body, dict) and body is not None and body.mode == GenerationMode.POSITIVE and not spared:
        case.body = {key: KNOWN.get(key, value) for key, value in case.body.items()}
    return case
