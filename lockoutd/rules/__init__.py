"""Rules: what to count, per what, how many within how long, and what to do then."""

from lockoutd.rules.loader import load_rules
from lockoutd.rules.model import Allowlist, Rule, RuleSet

__all__ = ["Allowlist", "Rule", "RuleSet", "load_rules"]
