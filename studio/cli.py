"""`python -m studio.cli`: manage the studio's accounts from the server's command line (the first admin, a lost
password), with the same database options as app.py (--data-dir, --database-url, their STUDIO_* variables).

    python -m studio.cli [--data-dir FOLDER] [--database-url URL] user add NAME [--role admin|member] [--password-stdin]
    python -m studio.cli user passwd NAME [--password-stdin]
    python -m studio.cli user list

It works beside a running studio (SQLite serialises the writes; it takes no claim on the data directory), on a
database the studio has already created: it never creates an empty one somewhere by mistake.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Sequence, TextIO

from studio.users import ROLES, SYSTEM_USER, Actor

CLI_ADMIN = Actor(SYSTEM_USER, "admin")  # who the records say created an account from the command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studio.cli", allow_abbrev=False,
                                description="Manage Text2Song Studio's accounts. The database options (and their "
                                            "STUDIO_* variables) are app.py's.")
    p.add_argument("--data-dir", metavar="FOLDER", help="the studio's data directory (its studio.db) [STUDIO_DATA_DIR]")
    p.add_argument("--database-url", metavar="URL", help="the studio's database, when not in the data directory "
                                                         "[STUDIO_DATABASE_URL]")
    groups = p.add_subparsers(dest="group", required=True)
    user = groups.add_parser("user", help="accounts").add_subparsers(dest="command", required=True)
    add = user.add_parser("add", help="create an account (the password from a prompt, or stdin)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="member")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    passwd = user.add_parser("passwd", help="set an account's password (its login sessions end)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from the first line of "
                                                                       "stdin")
    user.add_parser("list", help="every account: name, role, enabled or disabled")
    return p


def _password(args, stdin: TextIO) -> str:
    if args.password_stdin:
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("The two passwords differ: nothing was changed.")
    return first


def _engine(settings):
    """The studio's database, refused when it does not exist yet (SQLite would create an empty file)."""
    from sqlalchemy.engine import make_url

    from studio.db.engine import make_engine

    url = make_url(settings.engine_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not url.database or not path.is_file():
            raise SystemExit(f"There is no studio database at {path}: start the studio once with this "
                             "--data-dir (or --database-url) so that it creates it, or name the right one.")
    return make_engine(settings.engine_url)


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    from studio.config import parse_settings
    from studio.errors import StudioError
    from studio.services.accounts import AccountCreate, AccountService, AccountUpdate

    args = build_parser().parse_args(argv)
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    given = [*(["--data-dir", args.data_dir] if args.data_dir else []),
             *(["--database-url", args.database_url] if args.database_url else [])]
    settings = parse_settings(given, os.environ)
    engine = _engine(settings)
    try:
        accounts = AccountService(engine, settings.session_hours, login_required=True)
        if args.command == "list":
            for info in accounts.list_accounts(CLI_ADMIN):
                state = "disabled" if info.disabled else "enabled"
                print(f"{info.name}\t{info.role}\t{state}", file=stdout)
            return 0
        password = _password(args, stdin)
        if args.command == "add":
            info = accounts.create_account(CLI_ADMIN, AccountCreate.model_construct(
                name=args.name, password=password, role=args.role))
            print(f"Created {info.role} {info.name}.", file=stdout)
        else:
            accounts.update_account(CLI_ADMIN, args.name, AccountUpdate.model_construct(password=password))
            print(f"The password of {args.name} is set; their login sessions ended.", file=stdout)
        return 0
    except StudioError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
