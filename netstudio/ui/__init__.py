"""The PySide6 desktop editor. The only NetStudio package that imports Qt.

Kept import-light on purpose: ``netstudio.ui.training`` lives below this
package, and importing it must not pull in the whole editor.
"""
