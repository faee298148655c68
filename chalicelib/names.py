"""Memorable agent names (adjective + noun, like GreenCastle) and the rules for any name."""

import re
import secrets
from typing import Literal, get_args

ADJECTIVES = (
    "Amber Azure Bold Brave Bright Brisk Calm Clever Copper Coral Crimson Crisp Dapper Eager "
    "Emerald Fair Fancy Gentle Golden Grand Green Happy Hazel Honest Indigo Ivory Jade Jolly "
    "Keen Kind Lively Lucky Lunar Magenta Mellow Merry Misty Noble Olive Orange Pearl Plucky "
    "Proud Purple Quick Quiet Rapid Rosy Ruby Rustic Sage Scarlet Silver Sleek Smooth Snowy "
    "Solar Spry Steady Stellar Sunny Swift Tidy Topaz True Velvet Violet Vivid Warm Wise Witty Zesty"
).split()
NOUNS = (
    "Anchor Badger Beacon Bear Bison Brook Canyon Castle Cedar Comet Condor Coyote Crane Creek "
    "Dolphin Eagle Falcon Fern Finch Forest Fox Glacier Grove Harbor Hawk Heron Hill Island Lake "
    "Lantern Lark Lion Lotus Lynx Maple Marsh Meadow Mesa Mountain Oak Orchid Otter Owl Panda "
    "Peak Pine Pond Prairie Quartz Raven Reef Ridge River Robin Sparrow Spring Star Stone Stream "
    "Summit Swan Thunder Tiger Valley Willow Wolf Wren"
).split()

# The names people write under (tools/overseer.py): the default, and the one a person takes in
# a project where an agent registered as the default before it was reserved. No agent takes them.
OVERSEER_NAMES = ("Overseer", "HumanOverseer")
_RESERVED = frozenset(name.lower() for name in OVERSEER_NAMES)

# A person's profile, as tools/overseer.py makes it (nothing changes it after): how a restore knows a
# person in an archive written before profiles said their kind (archive/render.py, agent_kind).
OVERSEER_PROFILE = {"program": "human", "model": "human", "task_description": "Human overseer (web UI)"}

# Who may write to an agent of each kind until it chooses (set_contact_policy): a person is open
# to every agent. A profile names a policy only when it differs (archive/render.py).
ContactPolicy = Literal["open", "auto", "contacts_only", "block_all"]
CONTACT_POLICIES = get_args(ContactPolicy)
DEFAULT_CONTACT_POLICY = {"agent": "auto", "human": "open"}

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9]{1,63}")
NAME_RULES = "Agent names are 2-64 letters and digits starting with a letter, e.g. GreenCastle."

# A product's key (tools/products.py), as typed: case-insensitive, stored in lower case.
PRODUCT_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """Pydantic validator for agent names, with a message that says how to fix it."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(_invalid(name))
    return name


def check_new_name(name: str) -> str:
    """check_name of a field that, omitted, has a name generated (register_agent's): only there is
    omitting it a way out (a required name then got "Field required")."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{_invalid(name)} Omit the name to get one generated.")
    return name


def _invalid(name: str) -> str:
    said = f"{name!r} is not a valid agent name. {NAME_RULES}"
    if "@" in name:  # an agent acting on mail from another project wrote its address as its own name
        said += (" This field takes a name alone: Name@project addresses an agent of another project only where a field"
                 " takes addresses (send_message's to); to act as an agent of another project, pass that project as"
                 " project_key and the name alone.")
    return said


def reserved(name: str) -> bool:
    """Whether the name is one people write under (names are case-insensitive)."""
    return name.lower() in _RESERVED


def random_name() -> str:
    return secrets.choice(ADJECTIVES) + secrets.choice(NOUNS)
