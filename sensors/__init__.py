from sensors.inbox import build_inbox_sensor

__all__ = ["build_inbox_sensor"]
