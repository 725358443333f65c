"""Reading text: validation of what callers pass, entities, time expressions, the words a
query or a memory is made of, and the rules that pick facts out of a chat turn."""
