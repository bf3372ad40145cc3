"""The example federation: instance PS, a central server, Interior's population registry and
the security servers of five ministries, on 127.0.0.1 (issue 2 item 9)."""
