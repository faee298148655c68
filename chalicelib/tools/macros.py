"""(being written)"""

TOOLS: list = []
