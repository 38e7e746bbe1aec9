"""The demo: a Busflow-shaped database night by night, and a loopback S3 server (rclone)."""
