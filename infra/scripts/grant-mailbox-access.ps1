<#
.SYNOPSIS
Lets the app's managed identity write calendars in the technicians' mailboxes only, using Exchange Online
RBAC for Applications (no tenant-wide Calendars.ReadWrite).

.DESCRIPTION
Run as an Exchange administrator with the ExchangeOnlineManagement module:
  Connect-ExchangeOnline
  ./grant-mailbox-access.ps1 -ManagedIdentityClientId <client id> -ManagedIdentityObjectId <enterprise app object id> `
                             -TechniciansGroup "FS Technicians"

The scope is a mail-enabled security group of technicians: add and remove people there. Afterwards the
script checks one member with Test-ServicePrincipalAuthorization. Make sure no Entra consent of the
Microsoft Graph application permission Calendars.ReadWrite remains for this identity: Entra grants and
Exchange RBAC grants add up, so a leftover Entra grant would open every mailbox in the tenant.
#>
param(
    [Parameter(Mandatory)] [string] $ManagedIdentityClientId,
    [Parameter(Mandatory)] [string] $ManagedIdentityObjectId,
    [Parameter(Mandatory)] [string] $TechniciansGroup,
    [string] $ScopeName = "Field Service technicians",
    [string] $DisplayName = "fieldservice-outlook-sync",
    [switch] $IncludeMailboxSettings
)
$ErrorActionPreference = "Stop"

$group = Get-DistributionGroup -Identity $TechniciansGroup
$sp = Get-ServicePrincipal -Identity $ManagedIdentityClientId -ErrorAction SilentlyContinue
if (-not $sp) {
    $sp = New-ServicePrincipal -AppId $ManagedIdentityClientId -ObjectId $ManagedIdentityObjectId -DisplayName $DisplayName
}
if (-not (Get-ManagementScope -Identity $ScopeName -ErrorAction SilentlyContinue)) {
    New-ManagementScope -Name $ScopeName -RecipientRestrictionFilter "MemberOfGroup -eq '$($group.DistinguishedName)'" | Out-Null
}
$assignment = "$DisplayName calendars"
if (-not (Get-ManagementRoleAssignment -Identity $assignment -ErrorAction SilentlyContinue)) {
    New-ManagementRoleAssignment -Name $assignment -App $sp.ServiceId -Role "Application Calendars.ReadWrite" -CustomResourceScope $ScopeName | Out-Null
}
if ($IncludeMailboxSettings) {
    # Optional: lets the mailbox test read each technician's time zone (GET /mailboxSettings), so event bodies show
    # local times. Without it the test succeeds with a warning and bodies show UTC, labelled as such.
    $settingsAssignment = "$DisplayName mailbox settings"
    if (-not (Get-ManagementRoleAssignment -Identity $settingsAssignment -ErrorAction SilentlyContinue)) {
        New-ManagementRoleAssignment -Name $settingsAssignment -App $sp.ServiceId -Role "Application MailboxSettings.Read" `
            -CustomResourceScope $ScopeName | Out-Null
    }
}
$member = Get-DistributionGroupMember -Identity $TechniciansGroup | Select-Object -First 1
if ($member) {
    Test-ServicePrincipalAuthorization -Identity $sp.ServiceId -Resource $member.PrimarySmtpAddress | Format-Table
}
Write-Host "Done. Changes can take up to an hour to apply to Graph."
