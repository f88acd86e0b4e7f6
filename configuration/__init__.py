"""(placeholder package)"""
