"""Project files, export of trained models."""

from netstudio.project.io import FORMAT_VERSION, SUFFIX, Project, load_project, save_project

__all__ = ["FORMAT_VERSION", "SUFFIX", "Project", "load_project", "save_project"]
