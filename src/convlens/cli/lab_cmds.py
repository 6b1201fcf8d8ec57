"""Lab commands: lab, attack, report."""
