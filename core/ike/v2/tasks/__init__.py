"""IKEv2 exchanges, one module each (strongSwan's libcharon/sa/ikev2/tasks in spirit)."""
