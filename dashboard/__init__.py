"""The Streamlit dashboard of autocompress (``autocompress dashboard``). The library never imports it."""
