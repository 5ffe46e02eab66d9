"""The technician's services on the local socket (status_socket, control): status, doctor,
pairing and decommissioning (commissioning), the test alarm (trial_alarm)."""
