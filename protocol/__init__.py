"""The wire contract shared by cloudcore, edgecore and the mappers.

Pure: nothing here opens a socket, starts a task, reads a clock or touches a file.
"""
