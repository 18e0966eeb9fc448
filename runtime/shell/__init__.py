"""The trio shell: drives the sans-IO cores with real sockets, timers and tasks."""
