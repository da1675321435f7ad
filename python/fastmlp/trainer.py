"""Placeholder: being written (see the issue "Training engine and user API")."""
EarlyStopping = None
History = None
Trainer = None
