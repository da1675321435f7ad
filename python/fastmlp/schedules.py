"""Placeholder: being written (see the issue "Training engine and user API")."""
