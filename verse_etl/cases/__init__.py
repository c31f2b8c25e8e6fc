"""One case in, its volume stores and table rows out: a VerSe scan or a MosMed study."""
