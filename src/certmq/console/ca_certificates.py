"""``/console/ca-certificates``: list, register with the code flow, show, activate,
inactivate and delete CA certificates. Inactivating and deleting ask first, saying
how many live devices will be disconnected."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from certmq.console import live
from certmq.console.rendering import (
    FormError,
    checked_form,
    console_of,
    current_session,
    failure,
    pem_field,
    redirect,
    render,
    text_field,
)
from certmq.console.sessions import ConsoleSession
from certmq.registry.errors import FindCaBySnError, RegistryError
from certmq.web.context import Context
from certmq.web.paging import PageNo

router = APIRouter(prefix="/ca-certificates")

Session = Annotated[ConsoleSession, Depends(current_session)]
PAGE_SIZE = 20


@router.get("")
async def ca_list(
    request: Request,
    session: Session,
    context: Context,
    page_no: PageNo = 1,
) -> Response:
    page = await context.registry.list_cas(page_no, PAGE_SIZE)
    live_per_ca = live.by_ca((await context.control.connections()).items)
    rows = []
    for record in page.items:
        devices = await context.registry.list_devices(1, 1, ca_sn=record.sn)
        rows.append({"ca": record, "devices": devices.total, "live": live_per_ca[record.sn]})
    return render(
        request,
        "ca_list.html",
        session=session,
        section="ca",
        rows=rows,
        page=page,
        pages=max(1, -(-page.total // PAGE_SIZE)),
    )


@router.post("/registration-code")
async def new_registration_code(request: Request, session: Session, context: Context) -> Response:
    await checked_form(request, session)
    code = await context.registry.issue_registration_code()
    return redirect(request, f"/console/ca-certificates/register?code={code.code}")


@router.get("/register")
async def register_page(request: Request, session: Session, code: str = "") -> Response:
    return render(
        request,
        "ca_register.html",
        session=session,
        section="ca",
        code=code,
        error="",
        values={"name": "", "ca_pem": "", "verification_pem": ""},
    )


@router.post("")
async def register(request: Request, session: Session, context: Context) -> Response:
    form = await checked_form(request, session)
    code = text_field(form, "code")
    values = {
        "name": text_field(form, "name"),
        "ca_pem": text_field(form, "ca_pem"),
        "verification_pem": text_field(form, "verification_pem"),
    }
    try:
        ca_pem = await pem_field(form, "ca_file", "ca_pem", "CA certificate")
        verification_pem = await pem_field(
            form, "verification_file", "verification_pem", "verification certificate"
        )
        record = await context.registry.register_ca(values["name"], ca_pem, verification_pem)
    except (FormError, RegistryError) as error:
        return render(
            request,
            "ca_register.html",
            session=session,
            section="ca",
            status_code=400,
            code=code,
            error=failure(error),
            values=values,
        )
    return redirect(
        request,
        f"/console/ca-certificates/{record.sn}",
        success=f"Registered CA certificate {record.name} (Sn {record.sn}). Devices it issued can connect now.",
    )


@router.get("/{sn}")
async def ca_detail(request: Request, session: Session, context: Context, sn: str) -> Response:
    try:
        record = await context.registry.get_ca(sn)
    except FindCaBySnError as error:
        return render(
            request, "not_found.html", session=session, section="ca", status_code=404, message=str(error)
        )
    devices = await context.registry.list_devices(1, 1, ca_sn=sn)
    inactive = await context.registry.list_devices(1, 1, ca_sn=sn, status="inactive")
    return render(
        request,
        "ca_detail.html",
        session=session,
        section="ca",
        ca=record,
        devices=devices.total,
        inactive_devices=inactive.total,
        live=len(await live.of_ca(context.control, sn)),
        mode=context.control.auth_mode(),
        tls=next((item for item in context.control.listeners() if item.name == "tls"), None),
        server_ca_file=console_of(request).server_ca_file,
    )


CONFIRMATIONS = {
    "inactivate": (
        "Inactivate CA certificate {name}?",
        "New connections of every device it issued will be refused, and its devices' live sessions "
        "cut at once. Device records are kept; activate the CA again to let them back.",
        "Inactivate",
    ),
    "delete": (
        "Delete CA certificate {name}?",
        "The CA and the {devices} device certificate record(s) it issued will be removed, and its "
        "devices' live sessions cut at once. To let its devices back later you would register the CA "
        "again with a new verification certificate.",
        "Delete",
    ),
}


@router.get("/{sn}/{action}")
async def confirm(request: Request, session: Session, context: Context, sn: str, action: str) -> Response:
    if action not in CONFIRMATIONS:
        return render(
            request, "not_found.html", session=session, section="ca", status_code=404, message="no such page"
        )
    try:
        record = await context.registry.get_ca(sn)
    except FindCaBySnError as error:
        return render(
            request, "not_found.html", session=session, section="ca", status_code=404, message=str(error)
        )
    devices = (await context.registry.list_devices(1, 1, ca_sn=sn)).total
    title, consequence, button = CONFIRMATIONS[action]
    return render(
        request,
        "confirm.html",
        session=session,
        section="ca",
        title=title.format(name=record.name),
        subject=f"CA certificate {record.name}, Sn {record.sn}",
        consequence=consequence.format(devices=devices),
        disconnected=len(await live.of_ca(context.control, sn)),
        action=f"/console/ca-certificates/{sn}/{action}",
        button=button,
        cancel=f"/console/ca-certificates/{sn}",
    )


@router.post("/{sn}/activate")
async def activate(request: Request, session: Session, context: Context, sn: str) -> Response:
    await checked_form(request, session)
    try:
        record = await context.registry.activate_ca(sn)
    except RegistryError as error:
        return redirect(request, "/console/ca-certificates", error=failure(error))
    return redirect(
        request,
        f"/console/ca-certificates/{sn}",
        success=f"Activated CA certificate {record.name}: its devices may connect again.",
    )


@router.post("/{sn}/inactivate")
async def inactivate(request: Request, session: Session, context: Context, sn: str) -> Response:
    await checked_form(request, session)
    cut = len(await live.of_ca(context.control, sn))
    try:
        record = await context.registry.inactivate_ca(sn)
    except RegistryError as error:
        return redirect(request, "/console/ca-certificates", error=failure(error))
    return redirect(
        request,
        f"/console/ca-certificates/{sn}",
        success=f"Inactivated CA certificate {record.name}: its devices are refused; "
        f"{cut} live connection(s) disconnected.",
    )


@router.post("/{sn}/delete")
async def delete(request: Request, session: Session, context: Context, sn: str) -> Response:
    await checked_form(request, session)
    cut = len(await live.of_ca(context.control, sn))
    try:
        record = await context.registry.get_ca(sn)
        await context.registry.delete_ca(sn)
    except RegistryError as error:
        return redirect(request, "/console/ca-certificates", error=failure(error))
    return redirect(
        request,
        "/console/ca-certificates",
        success=f"Deleted CA certificate {record.name} and its device certificates; "
        f"{cut} live connection(s) disconnected.",
    )
