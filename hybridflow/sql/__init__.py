"""The hot statements of one dialect as fixed SQL through its driver (``sqlite``); everything else is Core."""
