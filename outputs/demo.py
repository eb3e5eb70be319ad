"""`make run`'s demo output: the collected sandbox messages delivered to the
local receiver (`manage.py output_receiver`), which prints what it takes.

Created once, by name: a user's edits or deletion are left alone on the
next start.
"""

from __future__ import annotations

from outputs.models import Output, OutputFormat

DEMO_OUTPUT = "Demo output (local receiver)"


def ensure_demo_output(receiver_url: str) -> list[str]:
    """Create the demo output if missing; return lines for the banner."""
    if not Output.objects.filter(name=DEMO_OUTPUT).exists():
        output = Output(name=DEMO_OUTPUT, format=OutputFormat.SUMO, max_batch_count=500)
        output.set_url(f"{receiver_url}/demo")
        output.save()
    return [
        f"Outputs: '{DEMO_OUTPUT}' delivers the collected messages (Sumo format)",
        f"  to {receiver_url}/demo: the receiver prints a line per batch below.",
    ]
