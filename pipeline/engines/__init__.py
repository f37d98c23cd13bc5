"""Executors: the engines that build stages. Each module is imported only when chosen."""
