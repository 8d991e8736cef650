"""In-app notifications: a per-user inbox, and pluggable senders for other channels."""
