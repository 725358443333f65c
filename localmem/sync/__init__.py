"""Sync between one person's devices over a shared folder, end-to-end encrypted: the merge
rules (merge.py), a memory's stamps (stamps.py), the changes segments carry (codec.py),
importing them (apply.py), the device's state (state.py) and a sync step (syncer.py). The
folder's files are ``localmem.store.syncfolder``'s."""
