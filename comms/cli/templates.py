"""``comms`` commands: the announcement templates."""

from __future__ import annotations

import click

from comms.cli.base import (
    AppContext,
    cli,
    emit,
    pass_app,
    report,
)
from comms.errors import (
    NotFound,
)
from comms.rendering import registry_for


@cli.group()
def template() -> None:
    """Announcement templates."""


@template.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "include_internal", is_flag=True, help="Include internal templates.")
@pass_app
def template_list(app: AppContext, as_json: bool, include_internal: bool) -> None:
    """List the templates and their variables."""
    registry = registry_for(app.settings)
    specs = registry.list(None if include_internal else "public")
    document = [
        {
            "name": s.name,
            "title": s.title,
            "audience": s.audience,
            "needs_next_update": s.needs_next_update,
            "mentions_everyone": s.mentions_everyone,
            "variables": [
                {
                    "name": v.name,
                    "type": v.type.value,
                    "required": v.required,
                    "help": v.help,
                    "choices": list(v.choices),
                }
                for v in s.variables
            ],
        }
        for s in specs
    ]
    emit(document, as_json, lambda: "\n".join(f"{d['name']:<24} {d['title']}" for d in document))


@template.command("show")
@click.argument("name")
@pass_app
def template_show(app: AppContext, name: str) -> None:
    """Show a template's variables and source."""
    try:
        spec = registry_for(app.settings).get(name)
    except NotFound as error:
        report(error)
    click.echo(f"{spec.name}: {spec.title}\n{spec.description}\n\nvariables:")
    for v in spec.variables:
        need = "required" if v.required else "optional"
        choices = f" [{' | '.join(v.choices)}]" if v.choices else ""
        click.echo(f"  {v.name:<20} {v.type.value:<9} {need:<9} {v.help}{choices}")
    click.echo("\n" + spec.source)
