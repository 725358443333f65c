"""Sync between one person's devices over a shared folder (issue 26, in progress): the merge
rules (merge.py); the folder's files are ``localmem.store.syncfolder``'s."""
