"""CSV files: the table as stripped strings, the way NetStudio's reader sees it."""


def read_table(path, sep, has_header):
    """The CSV as a pandas table of stripped strings without blank rows (and without the header)."""
    import pandas as pd

    options = dict(sep=sep, header=None, dtype=str, keep_default_na=False, na_filter=False,
                   skipinitialspace=True, skip_blank_lines=False)
    try:
        table = pd.read_csv(path, encoding="utf-8-sig", **options)
    except UnicodeDecodeError:  # spreadsheet exports are often cp1252
        table = pd.read_csv(path, encoding="latin-1", **options)
    table = table.apply(lambda column: column.str.strip())
    table = table[(table != "").any(axis=1)].reset_index(drop=True)
    return table.iloc[1:].reset_index(drop=True) if has_header else table
