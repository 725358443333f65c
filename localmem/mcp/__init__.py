"""The MCP server (``localmem mcp``): the store's tools for editors, over stdio."""
